//! Fair tags (ADR 0006): an owner's open jobs at one priority share one stream of tags, so
//! each owner gets an equal share of the claims whatever their number of jobs. A job's
//! tasks are tagged `vtime + offset + n × stride`, where `stride` is the number of the
//! owner's open jobs there and `offset` the job's place among them.

/// The tag layout of one open job of an owner at a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStride {
    pub job: i64,
    pub priority: i16,
    pub stride: i64,
    pub offset: i64,
}

/// An open job as the rebalance pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenJob {
    pub id: i64,
    pub owner: String,
    pub priority: i16,
    /// The stride its tags were laid out with.
    pub stride: i64,
}

/// Which jobs need new tags: every open job of an owner and priority whose stride disagrees
/// with the owner's number of open jobs there. `open` is ordered by (owner, priority, id).
pub fn restrides(open: &[OpenJob]) -> Vec<JobStride> {
    let mut out = Vec::new();
    for group in open.chunk_by(|a, b| a.owner == b.owner && a.priority == b.priority) {
        let k = group.len() as i64;
        if group.iter().all(|j| j.stride == k) {
            continue;
        }
        out.extend(group.iter().enumerate().map(|(i, j)| JobStride {
            job: j.id,
            priority: j.priority,
            stride: k,
            offset: i as i64,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, owner: &str, priority: i16, stride: i64) -> OpenJob {
        OpenJob {
            id,
            owner: owner.into(),
            priority,
            stride,
        }
    }

    #[test]
    fn only_groups_whose_strides_disagree_are_retagged() {
        let s = |job, priority, stride, offset| JobStride {
            job,
            priority,
            stride,
            offset,
        };
        let cases = [
            (vec![], vec![]),
            // One job alone, laid out for one: nothing to do.
            (vec![job(1, "a", 0, 1)], vec![]),
            // Alice's second job ended: her remaining one goes back to stride 1.
            (vec![job(1, "a", 0, 2)], vec![s(1, 0, 1, 0)]),
            // Bob submitted a second job: both of his interleave, Alice's stay.
            (
                vec![job(1, "a", 0, 1), job(2, "b", 0, 1), job(3, "b", 0, 2)],
                vec![s(2, 0, 2, 0), s(3, 0, 2, 1)],
            ),
            // Priorities are separate streams.
            (vec![job(1, "a", 0, 1), job(2, "a", 5, 1)], vec![]),
        ];
        for (open, want) in cases {
            assert_eq!(restrides(&open), want, "{open:?}");
        }
    }
}
