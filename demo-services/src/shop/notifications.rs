//! notifications: records the messages orders sends, standing in for e-mail or SMS.

use std::path::Path;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::http::{ApiError, Reply, read_json, reply, segments};
use super::input::{check_id, check_text};
use super::store::{NOW, Store, StoreError};

const MIGRATIONS: &[&str] = &[r"
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"];

/// The newest this many are listed.
const LIST_LIMIT: i64 = 100;

#[derive(Debug, Deserialize)]
struct NotifyRequest {
    order_id: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct Notification {
    id: i64,
    order_id: String,
    message: String,
    created_at: String,
}

pub struct Notifications {
    store: Store,
}

impl Notifications {
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let store = Store::open(data_dir, "notifications", MIGRATIONS).await?;
        Ok(Self { store })
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, segments(&path).as_slice()) {
            (Method::POST, ["notifications"]) => {
                let body: NotifyRequest = read_json(req).await?;
                check_id("order_id", &body.order_id)?;
                check_text("message", &body.message, 1000)?;
                let stored = self.store.call(move |conn| insert(conn, body)).await?;
                reply(StatusCode::ACCEPTED, &stored)
            }
            (Method::GET, ["notifications"]) => {
                let list = self.store.call(list).await?;
                reply(StatusCode::OK, &list)
            }
            (_, ["notifications"]) => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NoRoute),
        }
    }
}

fn insert(conn: &mut Connection, req: NotifyRequest) -> Result<Notification, StoreError> {
    let (id, created_at): (i64, String) = conn.query_row(
        &format!(
            "INSERT INTO notifications (order_id, message, created_at) VALUES (?1, ?2, {NOW})
             RETURNING id, created_at"
        ),
        params![req.order_id, req.message],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Notification {
        id,
        order_id: req.order_id,
        message: req.message,
        created_at,
    })
}

fn list(conn: &mut Connection) -> Result<Vec<Notification>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, order_id, message, created_at FROM notifications ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([LIST_LIMIT], |r| {
        Ok(Notification {
            id: r.get(0)?,
            order_id: r.get(1)?,
            message: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
