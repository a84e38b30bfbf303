//! Expiring sorted sets (`expiring.lua`): members that stop counting at their score, a
//! Redis time, unless renewed. They carry shared counts' slots (`crate::count`), capped,
//! and the membership lists below, uncapped: `announce` adds or renews a member,
//! `members` lists the live ones, `withdraw` removes one. Every decision that reads the
//! time runs inside the script, on Redis's clock, so replicas whose clocks disagree
//! still agree on what has expired.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::SharedStore;
use crate::SharedError;

/// The script of every operation that reads the time (EVALSHA, loaded again by redis-rs
/// when Redis answers NOSCRIPT, as after a restart).
static EXPIRING: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("expiring.lua")));

/// `ttl` in whole milliseconds, at least 1.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SharedStore {
    /// Adds `member` to the set `key` for `ttl`, unless the set already has `cap` live
    /// members (0: no cap); a member already there is renewed whatever the cap.
    pub(crate) async fn add_expiring(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
        cap: u32,
    ) -> Result<bool, SharedError> {
        self.run(|mut connection| async move {
            let added: u32 = EXPIRING
                .key(key)
                .arg("add")
                .arg(member)
                .arg(millis(ttl))
                .arg(cap)
                .invoke_async(&mut connection)
                .await?;
            Ok(added == 1)
        })
        .await
    }

    /// The live members of the set `key`.
    pub(crate) async fn live_expiring(&self, key: &str) -> Result<Vec<String>, SharedError> {
        self.run(|mut connection| async move { EXPIRING.key(key).arg("live").invoke_async(&mut connection).await })
            .await
    }

    /// Renews each `(key, member)` for `ttl` in one script call; the positions in
    /// `slots` of those that had expired or were gone, which are not renewed.
    pub(crate) async fn renew_expiring(
        &self,
        slots: &[(String, String)],
        ttl: Duration,
    ) -> Result<Vec<usize>, SharedError> {
        let mut invocation = EXPIRING.prepare_invoke();
        invocation.arg("renew").arg(millis(ttl));
        for (key, member) in slots {
            invocation.key(key).arg(member);
        }
        let lost: Vec<usize> =
            self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        // Lua's indices start at 1.
        Ok(lost.into_iter().map(|index| index.saturating_sub(1)).collect())
    }

    /// Removes `member` from the set `key`.
    pub(crate) async fn remove_expiring(&self, key: &str, member: &str) -> Result<(), SharedError> {
        self.run(|mut connection| async move {
            redis::cmd("ZREM").arg(key).arg(member).query_async::<()>(&mut connection).await
        })
        .await
    }

    /// Lists `member` in `<prefix>:members:<set>` for `ttl`; the caller announces again
    /// before `ttl` runs out to stay listed (a replica that stops is unlisted after `ttl`).
    pub async fn announce(&self, set: &str, member: &str, ttl: Duration) -> Result<(), SharedError> {
        self.add_expiring(&self.key(&["members", set]), member, ttl, 0).await.map(drop)
    }

    /// The members of `<prefix>:members:<set>` whose announcement has not run out.
    pub async fn members(&self, set: &str) -> Result<Vec<String>, SharedError> {
        self.live_expiring(&self.key(&["members", set])).await
    }

    /// Unlists `member` from `<prefix>:members:<set>` at once.
    pub async fn withdraw(&self, set: &str, member: &str) -> Result<(), SharedError> {
        self.remove_expiring(&self.key(&["members", set]), member).await
    }
}
