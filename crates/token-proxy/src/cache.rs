//! The token cache: one token in memory, fetched from a [`TokenSource`] when needed.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

/// A token the cache fetches again this many seconds before its `expires_at`, even if nobody said it changed.
const REFETCH_BEFORE_EXPIRY_SECS: i64 = 2;

/// A token and when it expires.
pub struct Fetched {
    /// The token; zeroized when dropped. Never printed.
    pub token: Zeroizing<String>,
    /// Unix seconds; 0 when it has no known expiry (device and ground tokens).
    pub expires_at: i64,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched").field("token", &"[redacted]").field("expires_at", &self.expires_at).finish()
    }
}

/// Why no token could be had. Each kind becomes an HTTP status at the proxy; the message goes in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceError {
    /// The user running the proxy may not read the token: 403.
    Denied(String),
    /// The token is not served now (it needs a login, the cloud is unreachable, it was revoked, it is not
    /// configured): 503.
    NotServed(String),
    /// Whatever holds the token cannot be reached: 502.
    Unreachable(String),
}

impl SourceError {
    /// The HTTP status the proxy answers with.
    pub fn status(&self) -> u16 {
        match self {
            SourceError::Denied(_) => 403,
            SourceError::NotServed(_) => 503,
            SourceError::Unreachable(_) => 502,
        }
    }

    /// The message (which never holds a token).
    pub fn message(&self) -> &str {
        match self {
            SourceError::Denied(m) | SourceError::NotServed(m) | SourceError::Unreachable(m) => m,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for SourceError {}

/// Where tokens come from.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The token as it is served now.
    async fn fetch(&self) -> Result<Fetched, SourceError>;
}

struct Cached {
    token: Arc<Zeroizing<String>>,
    expires_at: i64,
    generation: u64,
}

/// One token in memory, shared by every request. Cheap to share behind an `Arc`.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    slot: tokio::sync::Mutex<Option<Cached>>,
    generation: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache").field("generation", &self.generation.load(Ordering::Relaxed)).finish()
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl TokenCache {
    /// A cache over `source`; nothing is fetched until the first request.
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        TokenCache { source, slot: tokio::sync::Mutex::new(None), generation: AtomicU64::new(0) }
    }

    /// Forgets the cached token: the next request fetches it again. Call it when the token changed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The token to send now: the cached one while it is current, else a fresh one. Concurrent callers share
    /// one fetch.
    pub async fn get(&self) -> Result<Arc<Zeroizing<String>>, SourceError> {
        let mut slot = self.slot.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(cached) = slot.as_ref() {
            let fresh_enough = cached.expires_at == 0 || now_unix() + REFETCH_BEFORE_EXPIRY_SECS < cached.expires_at;
            if cached.generation == generation && fresh_enough {
                return Ok(cached.token.clone());
            }
        }
        self.fetch_into(&mut slot, generation).await
    }

    /// After the cloud refused `used` with a 401: a different token to retry with, or `None` when the source
    /// still serves `used` (a retry would be refused again).
    pub async fn after_unauthorized(
        &self,
        used: &Arc<Zeroizing<String>>,
    ) -> Result<Option<Arc<Zeroizing<String>>>, SourceError> {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && cached.token.as_str() != used.as_str()
        {
            // Another request already fetched a newer one.
            return Ok(Some(cached.token.clone()));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let token = self.fetch_into(&mut slot, generation).await?;
        Ok((token.as_str() != used.as_str()).then_some(token))
    }

    async fn fetch_into(
        &self,
        slot: &mut Option<Cached>,
        generation: u64,
    ) -> Result<Arc<Zeroizing<String>>, SourceError> {
        match self.source.fetch().await {
            Ok(fetched) => {
                let token = Arc::new(fetched.token);
                *slot = Some(Cached { token: token.clone(), expires_at: fetched.expires_at, generation });
                Ok(token)
            }
            Err(error) => {
                // Never keep serving a token the source no longer hands out.
                *slot = None;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Script {
        answers: Mutex<Vec<Result<(String, i64), SourceError>>>,
        calls: AtomicU64,
    }

    #[async_trait::async_trait]
    impl TokenSource for Script {
        async fn fetch(&self) -> Result<Fetched, SourceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut answers = self.answers.lock().unwrap();
            let next = if answers.len() > 1 { answers.remove(0) } else { answers[0].clone() };
            next.map(|(token, expires_at)| Fetched { token: Zeroizing::new(token), expires_at })
        }
    }

    fn cache(answers: Vec<Result<(String, i64), SourceError>>) -> (TokenCache, Arc<Script>) {
        let script = Arc::new(Script { answers: Mutex::new(answers), calls: AtomicU64::new(0) });
        (TokenCache::new(script.clone()), script)
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn a_cached_token_is_reused_until_invalidated() {
        let (cache, script) = cache(vec![Ok(("a".into(), 0)), Ok(("b".into(), 0))]);
        run(async {
            assert_eq!(cache.get().await.unwrap().as_str(), "a");
            assert_eq!(cache.get().await.unwrap().as_str(), "a");
            assert_eq!(script.calls.load(Ordering::SeqCst), 1);
            cache.invalidate();
            assert_eq!(cache.get().await.unwrap().as_str(), "b");
            assert_eq!(script.calls.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn a_token_about_to_lapse_is_fetched_again() {
        let soon = now_unix() + 1;
        let (cache, script) = cache(vec![Ok(("a".into(), soon)), Ok(("b".into(), now_unix() + 3600))]);
        run(async {
            assert_eq!(cache.get().await.unwrap().as_str(), "a");
            assert_eq!(cache.get().await.unwrap().as_str(), "b");
            assert_eq!(cache.get().await.unwrap().as_str(), "b");
            assert_eq!(script.calls.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn after_a_401_a_retry_is_offered_only_with_another_token() {
        let (cache, _) = cache(vec![Ok(("a".into(), 0)), Ok(("a".into(), 0)), Ok(("b".into(), 0))]);
        run(async {
            let first = cache.get().await.unwrap();
            assert!(cache.after_unauthorized(&first).await.unwrap().is_none(), "the same token is no retry");
            let newer = cache.after_unauthorized(&first).await.unwrap().expect("a new token");
            assert_eq!(newer.as_str(), "b");
            // A request that used the old token later finds the newer one without another fetch.
            assert_eq!(cache.after_unauthorized(&first).await.unwrap().unwrap().as_str(), "b");
        });
    }

    #[test]
    fn a_failed_fetch_drops_the_cached_token() {
        let denied = SourceError::Denied("you may not read main".into());
        let (cache, _) = cache(vec![Ok(("a".into(), 0)), Err(denied.clone())]);
        run(async {
            cache.get().await.unwrap();
            cache.invalidate();
            assert_eq!(cache.get().await.unwrap_err(), denied);
            assert_eq!(cache.get().await.unwrap_err().status(), 403);
        });
        let fetched = Fetched { token: Zeroizing::new("secret-value".into()), expires_at: 5 };
        assert!(!format!("{fetched:?}").contains("secret-value"));
    }
}
