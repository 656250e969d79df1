//! An object-store layer that counts logical calls and bytes by kind. Tests use it to prove
//! what the caches save (a repeat hunt makes no LIST and no footer read) and what pruning saves
//! (bytes read with bloom filters on and off). It sees logical calls, not HTTP attempts: the
//! provider budget counts at the transport (provider-guard issue).

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counts {
    pub list: AtomicU64,
    pub get: AtomicU64,
    /// Reads that reach the end of a Parquet object: footer reads.
    pub footer: AtomicU64,
    pub head: AtomicU64,
    pub get_ranges: AtomicU64,
    pub bytes: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountSnapshot {
    pub list: u64,
    pub get: u64,
    pub footer: u64,
    pub head: u64,
    pub get_ranges: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn snapshot(&self) -> CountSnapshot {
        CountSnapshot {
            list: self.list.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            footer: self.footer.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            get_ranges: self.get_ranges.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl CountSnapshot {
    pub fn since(&self, before: &CountSnapshot) -> CountSnapshot {
        CountSnapshot {
            list: self.list - before.list,
            get: self.get - before.get,
            footer: self.footer - before.footer,
            head: self.head - before.head,
            get_ranges: self.get_ranges - before.get_ranges,
            bytes: self.bytes - before.bytes,
        }
    }

    /// Every call that reaches the store.
    pub fn calls(&self) -> u64 {
        self.list + self.get + self.head + self.get_ranges
    }
}

#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    pub counts: Arc<Counts>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, counts: Arc<Counts>) -> Self {
        CountingStore { inner, counts }
    }
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let c = if options.head {
            &self.counts.head
        } else {
            &self.counts.get
        };
        c.fetch_add(1, Ordering::Relaxed);
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        if head {
            // No body: its range names the whole object, none of it read.
            return Ok(r);
        }
        self.counts
            .bytes
            .fetch_add(r.range.end - r.range.start, Ordering::Relaxed);
        if r.range.end == r.meta.size && r.range.end > r.range.start {
            self.counts.footer.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.counts.get_ranges.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get_ranges(location, ranges).await?;
        self.counts
            .bytes
            .fetch_add(r.iter().map(|b| b.len() as u64).sum(), Ordering::Relaxed);
        // A Parquet file ends with its footer length and the magic `PAR1`: a range that ends
        // with the magic is a footer read (the object's size is not known here).
        let footers = r
            .iter()
            .filter(|b| b.len() > 8 && b.ends_with(b"PAR1"))
            .count() as u64;
        self.counts.footer.fetch_add(footers, Ordering::Relaxed);
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
