//! The SQLite file of one service, shared by all its instances (WAL, 5 s busy timeout).
//!
//! rusqlite blocks, so every use runs on the blocking pool; one connection per process is
//! plenty for a demo, and the lock around it keeps its use sequential.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::Mutex;

/// How long a writer waits for another instance's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// A handle to the service's database; clones share the connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/<service>.sqlite` and brings its schema up to
    /// date: `migrations[i]` takes the schema from version `i` to `i + 1`.
    pub async fn open(
        data_dir: &Path,
        service: &str,
        migrations: &'static [&'static str],
    ) -> Result<Self, StoreError> {
        let data_dir = data_dir.to_owned();
        let path = data_dir.join(format!("{service}.sqlite"));
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            std::fs::create_dir_all(&data_dir).map_err(|source| StoreError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            enable_wal(&conn)?;
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
            migrate(&mut conn, migrations)?;
            Ok(conn)
        })
        .await??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.blocking_lock();
            f(&mut conn)
        })
        .await?
    }
}

/// How often switching to WAL is tried while other instances hold the file.
const WAL_ATTEMPTS: u32 = 250;

/// Puts the file in WAL mode. The switch needs the file to itself for a moment, and SQLite
/// answers BUSY at once, without the busy handler, while another instance of the service is
/// opening the same file: so it is tried again every 20 ms, for 5 s at most.
fn enable_wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut attempt = 1;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < WAL_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.map(drop),
        }
    }
}

/// Applies the migrations not yet applied, in one write transaction so that instances
/// starting together do not race.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(version).unwrap_or(0);
    for migration in migrations.iter().skip(applied) {
        tx.execute_batch(migration)?;
    }
    if migrations.len() > applied {
        tx.execute_batch(&format!("PRAGMA user_version = {}", migrations.len()))?;
    }
    tx.commit()?;
    Ok(())
}

/// Starts a write transaction at once, so concurrent writers queue on the busy timeout
/// instead of failing when a read lock cannot be upgraded.
pub fn write_tx(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// SQL for the current time as text, e.g. `2026-11-21T10:00:00.123Z`.
pub const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// A random id such as `ord-3f9a0c6e1b2d4a57`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instances of one service start together on one file (as `meshctl up` starts them): every
    /// one of them opens it, in WAL mode, with the schema applied once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_opening_one_file_together_all_open_it() {
        const MIGRATIONS: &[&str] = &["CREATE TABLE charges (id INTEGER PRIMARY KEY)"];
        let dir = tempfile::tempdir().unwrap();
        for round in 0..5 {
            let service = format!("payments{round}");
            let opens = (0..8).map(|_| {
                let (dir, service) = (dir.path().to_owned(), service.clone());
                tokio::spawn(async move { Store::open(&dir, &service, MIGRATIONS).await })
            });
            for open in opens.collect::<Vec<_>>() {
                let store = open
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                let mode: String = store
                    .call(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
                    .await
                    .unwrap();
                assert_eq!(mode, "wal");
            }
        }
    }
}
