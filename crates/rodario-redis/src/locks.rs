//! [`LockStore`]: `SET key token NX PX ttl`, released and renewed only by the token holder.

use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{check_ttl, LockKey, LockStore};
use rodario_core::error::BackendError;

use crate::{ttl_ms, Handle};

#[async_trait]
impl LockStore for Handle {
    async fn acquire(
        &self,
        key: &LockKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        check_ttl(crate::NAME, ttl)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lock_name(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl));
        match self.query::<redis::Value>("lock acquire", &cmd).await? {
            redis::Value::Okay => Ok(true),
            redis::Value::SimpleString(ok) if ok == "OK" => Ok(true),
            redis::Value::Nil => Ok(false),
            other => Err(crate::error::unexpected("lock acquire", &self.addr, &other)),
        }
    }

    async fn release(&self, key: &LockKey, token: &str) -> Result<bool, BackendError> {
        let mut script = self.scripts.unlock.key(self.lock_name(key));
        script.arg(token);
        let released: i64 = self.invoke("lock release", &script).await?;
        Ok(released == 1)
    }

    async fn renew(&self, key: &LockKey, token: &str, ttl: Duration) -> Result<bool, BackendError> {
        check_ttl(crate::NAME, ttl)?;
        let mut script = self.scripts.relock.key(self.lock_name(key));
        script.arg(token).arg(ttl_ms(ttl));
        let renewed: i64 = self.invoke("lock renew", &script).await?;
        Ok(renewed == 1)
    }
}
