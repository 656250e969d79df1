//! The worker's cache of lake bytes (issue 17): byte ranges of lake objects already read, kept
//! in memory up to a budget (least recently used out first), below DataFusion, so a second
//! hunt over a lake reads from memory what the first read from the provider — no GET, no
//! budget spent. Entries are keyed by the object's path and version (its ETag, or its size and
//! modification time, as the lake's listing gave them): an object rewritten since has another
//! version and its old bytes are never served; an object never listed through the cache is
//! read through. A read is served when one cached range holds it whole.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result,
};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One object at one version: (store, path, version).
type ObjectKey = (Arc<str>, String, String);

/// What the cache has done since it was made.
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    /// Bytes served from memory instead of the store.
    pub bytes_saved: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The version and metadata of each object as its latest listing gave them.
    listed: HashMap<(Arc<str>, String), ObjectMeta>,
    /// Cached ranges of each object version, by start.
    ranges: HashMap<ObjectKey, BTreeMap<u64, (Bytes, u64)>>,
    /// Recency: use tick → the range it names.
    lru: BTreeMap<u64, (ObjectKey, u64)>,
    tick: u64,
    bytes: u64,
}

/// Lake bytes shared by every lake a worker's engine reads.
#[derive(Debug)]
pub struct ByteCache {
    state: Mutex<State>,
    max_bytes: u64,
    pub counts: CacheCounts,
}

fn version(m: &ObjectMeta) -> String {
    match (&m.e_tag, &m.version) {
        (Some(e), _) => format!("e:{e}"),
        (None, Some(v)) => format!("v:{v}"),
        (None, None) => format!("s:{}:{}", m.size, m.last_modified.timestamp_micros()),
    }
}

impl ByteCache {
    /// A cache of at most `max_bytes` (0: caches nothing).
    pub fn new(max_bytes: u64) -> Self {
        ByteCache {
            state: Mutex::default(),
            max_bytes,
            counts: CacheCounts::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }

    /// Remembers what a listing says of an object; the bytes of any other version go.
    fn listed(&self, store: &Arc<str>, meta: &ObjectMeta) {
        let mut guard = self.state();
        let s = &mut *guard;
        let key = (store.clone(), meta.location.to_string());
        let v = version(meta);
        if let Some(old) = s.listed.insert(key.clone(), meta.clone())
            && version(&old) != v
        {
            let gone = (store.clone(), key.1, version(&old));
            if let Some(ranges) = s.ranges.remove(&gone) {
                for (_, (b, tick)) in ranges {
                    s.lru.remove(&tick);
                    s.bytes -= b.len() as u64;
                }
            }
        }
    }

    /// The object's listing, if it was listed through the cache.
    fn meta(&self, store: &Arc<str>, path: &Path) -> Option<ObjectMeta> {
        self.state()
            .listed
            .get(&(store.clone(), path.to_string()))
            .cloned()
    }

    /// The bytes of `range` of `key`, if one cached range holds them.
    fn get(&self, key: &ObjectKey, range: &Range<u64>) -> Option<Bytes> {
        let mut guard = self.state();
        let s = &mut *guard;
        s.tick += 1;
        let tick = s.tick;
        let ranges = s.ranges.get_mut(key)?;
        let (&start, (bytes, used)) = ranges.range_mut(..=range.start).next_back()?;
        if start + (bytes.len() as u64) < range.end {
            return None;
        }
        let hit = bytes.slice((range.start - start) as usize..(range.end - start) as usize);
        let old = std::mem::replace(used, tick);
        s.lru.remove(&old);
        s.lru.insert(tick, (key.clone(), start));
        Some(hit)
    }

    /// Whether a read of `len` bytes may be kept: a read of more than a quarter of the budget
    /// is not, or one large read would flush everything else.
    fn keeps(&self, len: u64) -> bool {
        len > 0 && len <= self.max_bytes / 4
    }

    /// Keeps `bytes` (the object's bytes from `start`), then evicts the least recently used
    /// ranges until the cache is within its budget.
    fn put(&self, key: ObjectKey, start: u64, bytes: Bytes) {
        let len = bytes.len() as u64;
        if !self.keeps(len) {
            return;
        }
        let mut guard = self.state();
        let s = &mut *guard;
        s.tick += 1;
        let tick = s.tick;
        let ranges = s.ranges.entry(key.clone()).or_default();
        if let Some((old, used)) = ranges.insert(start, (bytes, tick)) {
            s.lru.remove(&used);
            s.bytes -= old.len() as u64;
        }
        s.lru.insert(tick, (key, start));
        s.bytes += len;
        while s.bytes > self.max_bytes {
            let Some((_, (k, start))) = s.lru.pop_first() else {
                break;
            };
            if let Some(ranges) = s.ranges.get_mut(&k) {
                if let Some((b, _)) = ranges.remove(&start) {
                    s.bytes -= b.len() as u64;
                    self.counts.evictions.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::BYTE_CACHE
                        .with_label_values(&["eviction"])
                        .inc();
                }
                if ranges.is_empty() {
                    s.ranges.remove(&k);
                }
            }
        }
        crate::metrics::BYTE_CACHE_BYTES.set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
    }

    fn hit(&self, n: u64) {
        self.counts.hits.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes_saved.fetch_add(n, Ordering::Relaxed);
        crate::metrics::BYTE_CACHE.with_label_values(&["hit"]).inc();
        crate::metrics::BYTE_CACHE_SAVED.inc_by(n);
    }

    fn miss(&self) {
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        crate::metrics::BYTE_CACHE
            .with_label_values(&["miss"])
            .inc();
    }
}

/// One lake's store read through a [`ByteCache`].
#[derive(Debug)]
pub struct CachingStore {
    inner: Arc<dyn ObjectStore>,
    cache: Arc<ByteCache>,
    /// Which store paths are relative to (the lake URL's scheme and host).
    store: Arc<str>,
}

impl CachingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, cache: Arc<ByteCache>, store: &str) -> Self {
        CachingStore {
            inner,
            cache,
            store: store.into(),
        }
    }

    /// The object's listing and the absolute range `options` asks of it, when the read is one
    /// the cache may serve: a plain read of an object listed through it.
    fn cacheable(&self, location: &Path, options: &GetOptions) -> Option<(ObjectMeta, Range<u64>)> {
        if options.head
            || options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return None;
        }
        let meta = self.cache.meta(&self.store, location)?;
        let size = meta.size;
        let range = match &options.range {
            None => 0..size,
            Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
            Some(GetRange::Offset(o)) => *o..size,
            Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
        };
        (range.start < range.end).then_some((meta, range))
    }

    fn key(&self, meta: &ObjectMeta) -> ObjectKey {
        (self.store.clone(), meta.location.to_string(), version(meta))
    }

    fn listing(
        &self,
        s: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (cache, store) = (self.cache.clone(), self.store.clone());
        s.inspect(move |m| {
            if let Ok(m) = m {
                cache.listed(&store, m);
            }
        })
        .boxed()
    }
}

impl std::fmt::Display for CachingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cached({})", self.inner)
    }
}

/// A result made of bytes in hand.
fn result(meta: ObjectMeta, range: Range<u64>, bytes: Bytes) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
    }
}

#[async_trait]
impl ObjectStore for CachingStore {
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
        let Some((meta, range)) = self
            .cacheable(location, &options)
            .filter(|(_, r)| self.cache.keeps(r.end - r.start))
        else {
            return self.inner.get_opts(location, options).await;
        };
        let key = self.key(&meta);
        if let Some(bytes) = self.cache.get(&key, &range) {
            self.cache.hit(bytes.len() as u64);
            return Ok(result(meta, range, bytes));
        }
        self.cache.miss();
        let got = self.inner.get_opts(location, options).await?;
        if version(&got.meta) != key.2 {
            // The object changed since it was listed: its bytes are not this version's.
            return Ok(got);
        }
        let (meta, range) = (got.meta.clone(), got.range.clone());
        let bytes = got.bytes().await?;
        self.cache.put(key, range.start, bytes.clone());
        Ok(result(meta, range, bytes))
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let Some(meta) = self.cache.meta(&self.store, location) else {
            return self.inner.get_ranges(location, ranges).await;
        };
        let key = self.key(&meta);
        let mut out: Vec<Option<Bytes>> = ranges.iter().map(|r| self.cache.get(&key, r)).collect();
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&out)
            .filter(|(_, got)| got.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        for b in out.iter().flatten() {
            self.cache.hit(b.len() as u64);
        }
        if !missing.is_empty() {
            self.cache.miss();
            // One call for everything missing, so the store still coalesces nearby ranges.
            let mut fetched = self.inner.get_ranges(location, &missing).await?.into_iter();
            for (r, slot) in ranges.iter().zip(out.iter_mut()) {
                if slot.is_none() {
                    let b = fetched.next().unwrap_or_default();
                    self.cache.put(key.clone(), r.start, b.clone());
                    *slot = Some(b);
                }
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let r = self.inner.list_with_delimiter(prefix).await?;
        for m in &r.objects {
            self.cache.listed(&self.store, m);
        }
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::{CountingStore, Counts};
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    /// A store of `objects` (name, bytes) read through a cache of `budget` bytes, with the
    /// calls that reach the store counted.
    async fn setup(
        objects: &[(&str, usize)],
        budget: u64,
    ) -> (CachingStore, Arc<Counts>, Arc<InMemory>) {
        let mem = Arc::new(InMemory::new());
        for (name, len) in objects {
            let body: Vec<u8> = (0..*len).map(|i| (i % 251) as u8).collect();
            mem.put(&Path::from(*name), body.into()).await.unwrap();
        }
        let counts = Arc::new(Counts::default());
        let counted = Arc::new(CountingStore::new(mem.clone(), counts.clone()));
        let cache = Arc::new(ByteCache::new(budget));
        (CachingStore::new(counted, cache, "memory://t"), counts, mem)
    }

    async fn list(s: &CachingStore) {
        let _: Vec<_> = s.list(None).collect().await;
    }

    #[tokio::test]
    async fn a_range_read_again_or_inside_one_read_before_is_served_from_memory() {
        let (s, counts, _) = setup(&[("a", 10_000)], 1 << 20).await;
        let a = Path::from("a");
        // Not listed through the cache: read through, nothing kept.
        s.get_range(&a, 0..100).await.unwrap();
        s.get_range(&a, 0..100).await.unwrap();
        assert_eq!(counts.snapshot().get, 2);
        list(&s).await;
        let first = s.get_range(&a, 1000..3000).await.unwrap();
        let gets = counts.snapshot().get;
        assert_eq!(s.get_range(&a, 1000..3000).await.unwrap(), first);
        assert_eq!(
            s.get_range(&a, 1500..2000).await.unwrap(),
            first.slice(500..1000)
        );
        assert_eq!(counts.snapshot().get, gets, "served from memory");
        // Partly outside what was read: read from the store.
        s.get_range(&a, 2500..3500).await.unwrap();
        assert_eq!(counts.snapshot().get, gets + 1);
        // get_ranges: the missing ranges only, in one call.
        let got = s
            .get_ranges(&a, &[1000..1100, 5000..5100, 2600..2700])
            .await
            .unwrap();
        assert_eq!(got[0], first.slice(0..100));
        assert_eq!(counts.snapshot().get_ranges, 1);
        assert_eq!(
            s.get_ranges(&a, std::slice::from_ref(&(5000..5100)))
                .await
                .unwrap(),
            vec![got[1].clone()]
        );
        assert_eq!(counts.snapshot().get_ranges, 1);
        assert!(s.cache.counts.hits.load(Ordering::Relaxed) >= 4);
    }

    #[tokio::test]
    async fn the_budget_holds_the_least_recently_used_go_and_a_new_version_is_read_again() {
        let (s, counts, mem) = setup(&[("a", 4000), ("b", 4000)], 4096).await;
        list(&s).await;
        let (a, b) = (Path::from("a"), Path::from("b"));
        s.get_range(&a, 0..1000).await.unwrap();
        s.get_range(&b, 0..1000).await.unwrap();
        s.get_range(&a, 0..1000).await.unwrap(); // a is now the most recent
        s.get_range(&b, 1000..2000).await.unwrap();
        s.get_range(&b, 2000..3000).await.unwrap();
        s.get_range(&b, 3000..4000).await.unwrap(); // over 4096: the oldest (b 0..1000) goes
        assert!(s.cache.bytes() <= 4096);
        assert_eq!(s.cache.counts.evictions.load(Ordering::Relaxed), 1);
        let gets = counts.snapshot().get;
        s.get_range(&a, 0..1000).await.unwrap();
        assert_eq!(counts.snapshot().get, gets, "a was kept");
        s.get_range(&b, 0..1000).await.unwrap();
        assert_eq!(
            counts.snapshot().get,
            gets + 1,
            "b's first range was evicted"
        );
        // A read of more than a quarter of the budget is read through, never kept.
        s.get_range(&a, 0..2000).await.unwrap();
        s.get_range(&a, 0..2000).await.unwrap();
        assert_eq!(counts.snapshot().get, gets + 3);
        // Rewritten: the next listing shows a new version, whose bytes are read again.
        mem.put(&a, vec![7u8; 4000].into()).await.unwrap();
        list(&s).await;
        let fresh = s.get_range(&a, 0..1000).await.unwrap();
        assert!(
            fresh.iter().all(|x| *x == 7),
            "the new bytes, not the cached ones"
        );
        assert_eq!(counts.snapshot().get, gets + 4);
    }
}
