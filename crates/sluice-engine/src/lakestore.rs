//! A read-only, namespaced view of one lake over its object store.
//!
//! DataFusion sees the lake at `sluice-lake://lakes/<ns>/…`; this store maps `<ns>/X` to
//! `<root>/X` in the inner store and back. The namespace makes every path unique across lakes,
//! which matters because DataFusion's file-metadata cache (shared by all tasks of a worker) is
//! keyed by path and validated only by size and modification time: two lakes with the same
//! layout must never share an entry. Writes, deletes, copies and renames are refused: a hunt
//! reads its lake and nothing else.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::ops::Range;
use std::sync::Arc;

/// The URL scheme and host every lake table is registered under.
pub const LAKE_URL_BASE: &str = "sluice-lake://lakes";

#[derive(Debug, Clone)]
pub struct LakeStore {
    inner: Arc<dyn ObjectStore>,
    /// Where the lake lives in the inner store.
    root: Path,
    /// The lake's unique first path segment as DataFusion sees it.
    ns: Path,
}

impl std::fmt::Display for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LakeStore({} -> {}:{})", self.ns, self.inner, self.root)
    }
}

impl LakeStore {
    pub fn new(inner: Arc<dyn ObjectStore>, root: Path, ns: &str) -> Self {
        LakeStore {
            inner,
            root,
            ns: Path::from(ns),
        }
    }

    /// The table URL of this lake (a folder).
    pub fn table_url(&self) -> String {
        format!("{LAKE_URL_BASE}/{}/", self.ns)
    }

    fn to_inner(&self, p: &Path) -> Result<Path> {
        match p.prefix_match(&self.ns) {
            Some(rest) => Ok(self.root.parts().chain(rest).collect()),
            None => Err(object_store::Error::PermissionDenied {
                path: p.to_string(),
                source: "path outside the lake".into(),
            }),
        }
    }

    fn to_outer(ns: &Path, root: &Path, p: Path) -> Path {
        let mapped: Option<Path> = p
            .prefix_match(root)
            .map(|rest| ns.parts().chain(rest).collect());
        mapped.unwrap_or(p)
    }

    fn meta_out(ns: &Path, root: &Path, m: ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            location: Self::to_outer(ns, root, m.location),
            ..m
        }
    }

    fn read_only(&self, p: &Path) -> object_store::Error {
        object_store::Error::PermissionDenied {
            path: p.to_string(),
            source: "lakes are read-only".into(),
        }
    }
}

#[async_trait]
impl ObjectStore for LakeStore {
    async fn put_opts(&self, location: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(self.read_only(location))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(self.read_only(location))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        crate::metrics::LAKE_CALLS.with_label_values(&[op]).inc();
        let mut r = self
            .inner
            .get_opts(&self.to_inner(location)?, options)
            .await?;
        crate::metrics::BYTES_SCANNED.inc_by(r.range.end - r.range.start);
        r.meta = Self::meta_out(&self.ns, &self.root, r.meta);
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        crate::metrics::LAKE_CALLS
            .with_label_values(&["get_ranges"])
            .inc();
        let r = self
            .inner
            .get_ranges(&self.to_inner(location)?, ranges)
            .await?;
        crate::metrics::BYTES_SCANNED.inc_by(r.iter().map(|b| b.len() as u64).sum());
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let ro = self.clone();
        locations
            .map(move |l| l.and_then(|p| Err(ro.read_only(&p))))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner_prefix = match self.to_inner(prefix.unwrap_or(&self.ns)) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        crate::metrics::LAKE_CALLS
            .with_label_values(&["list"])
            .inc();
        let (ns, root) = (self.ns.clone(), self.root.clone());
        self.inner
            .list(Some(&inner_prefix))
            .map_ok(move |m| Self::meta_out(&ns, &root, m))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let paths = self
            .to_inner(prefix.unwrap_or(&self.ns))
            .and_then(|p| Ok((p, self.to_inner(offset)?)));
        let (inner_prefix, inner_offset) = match paths {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let (ns, root) = (self.ns.clone(), self.root.clone());
        self.inner
            .list_with_offset(Some(&inner_prefix), &inner_offset)
            .map_ok(move |m| Self::meta_out(&ns, &root, m))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let inner_prefix = self.to_inner(prefix.unwrap_or(&self.ns))?;
        let r = self.inner.list_with_delimiter(Some(&inner_prefix)).await?;
        Ok(ListResult {
            common_prefixes: r
                .common_prefixes
                .into_iter()
                .map(|p| Self::to_outer(&self.ns, &self.root, p))
                .collect(),
            objects: r
                .objects
                .into_iter()
                .map(|m| Self::meta_out(&self.ns, &self.root, m))
                .collect(),
        })
    }

    async fn copy_opts(&self, _: &Path, to: &Path, _: CopyOptions) -> Result<()> {
        Err(self.read_only(to))
    }

    async fn rename_opts(&self, _: &Path, to: &Path, _: RenameOptions) -> Result<()> {
        Err(self.read_only(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn maps_paths_into_the_lake_and_refuses_writes_and_escapes() {
        let inner = Arc::new(InMemory::new());
        for (path, bytes) in [
            ("data/a/dt=1/f.parquet", &b"abc"[..]),
            ("data/b/dt=1/f.parquet", b"zzzz"),
        ] {
            let payload = PutPayload::from_static(bytes);
            inner.put(&Path::from(path), payload).await.unwrap();
        }
        let a = LakeStore::new(inner.clone(), Path::from("data/a"), "lake-1");
        let listed: Vec<ObjectMeta> = a.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].location.as_ref(), "lake-1/dt=1/f.parquet");
        let got = a.get(&listed[0].location).await.unwrap();
        assert_eq!(got.meta.location.as_ref(), "lake-1/dt=1/f.parquet");
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"abc");
        let cases = [
            a.get(&Path::from("lake-2/dt=1/f.parquet")).await.err(),
            a.get(&Path::from("data/b/dt=1/f.parquet")).await.err(),
            a.put(&Path::from("lake-1/x"), PutPayload::from_static(b"x"))
                .await
                .err(),
            a.delete(&Path::from("lake-1/dt=1/f.parquet")).await.err(),
            a.copy(
                &Path::from("lake-1/dt=1/f.parquet"),
                &Path::from("lake-1/y"),
            )
            .await
            .err(),
        ];
        for (i, e) in cases.into_iter().enumerate() {
            assert!(
                matches!(e, Some(object_store::Error::PermissionDenied { .. })),
                "case {i}: {e:?}"
            );
        }
        // The other lake's object is untouched and the first lake's file still there.
        assert_eq!(
            inner
                .get(&Path::from("data/b/dt=1/f.parquet"))
                .await
                .unwrap()
                .meta
                .size,
            4
        );
        assert_eq!(a.table_url(), "sluice-lake://lakes/lake-1/");
    }
}
