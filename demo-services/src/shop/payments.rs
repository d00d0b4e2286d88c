//! payments: charges keyed by order id, so the mesh may retry a charge (even a POST) and the
//! customer is still charged once.

use std::path::Path;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::http::{ApiError, Reply, read_json, reply, segments};
use super::input::check_id;
use super::store::{NOW, Store, StoreError, new_id, write_tx};

const MIGRATIONS: &[&str] = &[r"
CREATE TABLE charges (
    order_id TEXT PRIMARY KEY,
    charge_id TEXT NOT NULL UNIQUE,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    refunded_at TEXT
);
"];

#[derive(Debug, Deserialize)]
struct ChargeRequest {
    order_id: String,
    amount_cents: i64,
}

#[derive(Debug, Deserialize)]
struct RefundRequest {
    order_id: String,
}

#[derive(Debug, Serialize)]
struct Charge {
    charge_id: String,
    order_id: String,
    amount_cents: i64,
    status: String,
    created_at: String,
}

enum Charged {
    Done(Charge),
    /// The order was charged before with another amount.
    AmountMismatch(i64),
}

pub struct Payments {
    store: Store,
}

impl Payments {
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let store = Store::open(data_dir, "payments", MIGRATIONS).await?;
        Ok(Self { store })
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, segments(&path).as_slice()) {
            (Method::POST, ["charges"]) => self.charge(req).await,
            (Method::POST, ["refunds"]) => self.refund(req).await,
            (Method::GET, ["charges", order_id]) => {
                let order_id = (*order_id).to_owned();
                let id = order_id.clone();
                match self.store.call(move |conn| get_charge(conn, &id)).await? {
                    Some(charge) => reply(StatusCode::OK, &charge),
                    None => Err(ApiError::NotFound {
                        what: "charge",
                        id: order_id,
                    }),
                }
            }
            (_, ["charges" | "refunds"] | ["charges", _]) => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NoRoute),
        }
    }

    async fn charge(&self, req: Request<Incoming>) -> Reply {
        let body: ChargeRequest = read_json(req).await?;
        check_id("order_id", &body.order_id)?;
        if body.amount_cents <= 0 {
            return Err(ApiError::bad(
                "amount_cents",
                "amount_cents must be greater than 0",
            ));
        }
        let outcome = self
            .store
            .call(move |conn| charge(conn, &body.order_id, body.amount_cents))
            .await?;
        match outcome {
            Charged::Done(charge) => reply(StatusCode::CREATED, &charge),
            Charged::AmountMismatch(amount) => Err(ApiError::Conflict(format!(
                "order already charged with amount_cents {amount}"
            ))),
        }
    }

    async fn refund(&self, req: Request<Incoming>) -> Reply {
        let body: RefundRequest = read_json(req).await?;
        check_id("order_id", &body.order_id)?;
        let order_id = body.order_id.clone();
        match self.store.call(move |conn| refund(conn, &order_id)).await? {
            Some(charge) => reply(StatusCode::OK, &charge),
            None => Err(ApiError::NotFound {
                what: "charge",
                id: body.order_id,
            }),
        }
    }
}

/// Captures a charge unless the order has one already, in which case that one is returned.
fn charge(conn: &mut Connection, order_id: &str, amount_cents: i64) -> Result<Charged, StoreError> {
    let tx = write_tx(conn)?;
    if let Some(existing) = get_charge(&tx, order_id)? {
        if existing.amount_cents != amount_cents {
            return Ok(Charged::AmountMismatch(existing.amount_cents));
        }
        return Ok(Charged::Done(existing));
    }
    tx.execute(
        &format!(
            "INSERT INTO charges (order_id, charge_id, amount_cents, status, created_at)
             VALUES (?1, ?2, ?3, 'captured', {NOW})"
        ),
        params![order_id, new_id("ch"), amount_cents],
    )?;
    let charge = get_charge(&tx, order_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("charge for {order_id} vanished")))?;
    tx.commit()?;
    Ok(Charged::Done(charge))
}

/// Marks the order's charge refunded (once); `None` when it was never charged.
fn refund(conn: &mut Connection, order_id: &str) -> Result<Option<Charge>, StoreError> {
    let tx = write_tx(conn)?;
    tx.execute(
        &format!(
            "UPDATE charges SET status = 'refunded', refunded_at = {NOW}
             WHERE order_id = ?1 AND status = 'captured'"
        ),
        [order_id],
    )?;
    let charge = get_charge(&tx, order_id)?;
    tx.commit()?;
    Ok(charge)
}

fn get_charge(conn: &Connection, order_id: &str) -> Result<Option<Charge>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT charge_id, order_id, amount_cents, status, created_at
             FROM charges WHERE order_id = ?1",
            [order_id],
            |r| {
                Ok(Charge {
                    charge_id: r.get(0)?,
                    order_id: r.get(1)?,
                    amount_cents: r.get(2)?,
                    status: r.get(3)?,
                    created_at: r.get(4)?,
                })
            },
        )
        .optional()?)
}
