//! orders: places an order as a saga over inventory, payments and notifications.
//!
//! Prices come from inventory, stock is reserved, then the customer is charged. When the charge
//! fails, the reservation is released again (retried, and if inventory stays unreachable,
//! remembered and retried in the background) so a failed order never keeps stock.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use super::http::{ApiError, Reply, json_response, read_json, reply, segments};
use super::input::{Item, check_items, check_text};
use super::store::{NOW, Store, StoreError, new_id, write_tx};
use super::upstream::{Answer, TraceHeaders, Upstream, UpstreamError};

const MIGRATIONS: &[&str] = &[r"
CREATE TABLE orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    items TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE pending_releases (
    order_id TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"];

/// The newest this many are listed.
const LIST_LIMIT: i64 = 50;
/// Releases tried while the order request waits, with doubling pauses from the first.
const RELEASE_ATTEMPTS: u32 = 3;
const RELEASE_BACKOFF: Duration = Duration::from_millis(100);
/// Remembered releases retried per background round.
const RELEASE_BATCH: i64 = 20;

#[derive(Debug, Deserialize)]
struct PlaceOrder {
    customer: String,
    items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: String,
}

#[derive(Serialize)]
struct ReserveRequest<'a> {
    order_id: &'a str,
    items: &'a [Item],
}

#[derive(Serialize)]
struct ChargeRequest<'a> {
    order_id: &'a str,
    amount_cents: i64,
}

#[derive(Serialize)]
struct NotifyRequest {
    order_id: String,
    message: String,
}

/// Why the saga stopped; the order is then stored as failed with [`Failure::reason`].
#[derive(Debug)]
enum Failure {
    UnknownProduct { index: usize, sku: String },
    OutOfStock { sku: Option<String> },
    TooExpensive,
    Inventory(UpstreamError),
    Payment(UpstreamError),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Self::UnknownProduct { .. } => "unknown product",
            Self::OutOfStock { .. } => "out of stock",
            Self::TooExpensive => "total too large",
            Self::Inventory(_) => "inventory unavailable",
            Self::Payment(_) => "payment failed",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownProduct { .. } | Self::TooExpensive => StatusCode::BAD_REQUEST,
            Self::OutOfStock { .. } => StatusCode::CONFLICT,
            // The saga ran to its end and compensated: orders itself is healthy, so this is
            // not a 5xx (callers' sidecars would count it against orders' instances).
            Self::Payment(_) => StatusCode::PAYMENT_REQUIRED,
            Self::Inventory(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The failed order as the response body, with what went wrong.
    fn body(&self, order: &Order) -> Value {
        let mut body = serde_json::to_value(order).unwrap_or_else(|_| json!({"id": order.id}));
        if let Some(fields) = body.as_object_mut() {
            let error = match self {
                Self::Inventory(err) | Self::Payment(err) => err.to_string(),
                _ => self.reason().to_owned(),
            };
            fields.insert("error".into(), error.into());
            match self {
                Self::UnknownProduct { index, sku } => {
                    fields.insert("field".into(), format!("items[{index}].sku").into());
                    fields.insert("sku".into(), sku.clone().into());
                }
                Self::OutOfStock { sku: Some(sku) } => {
                    fields.insert("sku".into(), sku.clone().into());
                }
                _ => {}
            }
        }
        body
    }
}

pub struct Orders {
    store: Store,
    upstream: Upstream,
    release_retry: AbortHandle,
}

impl Drop for Orders {
    fn drop(&mut self) {
        self.release_retry.abort();
    }
}

impl Orders {
    /// Opens the store and starts retrying remembered releases every `release_retry_every`.
    pub async fn open(
        data_dir: &Path,
        upstream: Upstream,
        release_retry_every: Duration,
    ) -> Result<Self, StoreError> {
        let store = Store::open(data_dir, "orders", MIGRATIONS).await?;
        let release_retry = tokio::spawn(retry_releases(
            store.clone(),
            upstream.clone(),
            release_retry_every,
        ))
        .abort_handle();
        Ok(Self {
            store,
            upstream,
            release_retry,
        })
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, segments(&path).as_slice()) {
            (Method::POST, ["orders"]) => self.place(req).await,
            (Method::GET, ["orders"]) => {
                let orders = self.store.call(list_orders).await?;
                reply(StatusCode::OK, &orders)
            }
            (Method::GET, ["orders", id]) => {
                let id = (*id).to_owned();
                let key = id.clone();
                match self.store.call(move |conn| get_order(conn, &key)).await? {
                    Some(order) => reply(StatusCode::OK, &order),
                    None => Err(ApiError::NotFound { what: "order", id }),
                }
            }
            (_, ["orders"] | ["orders", _]) => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NoRoute),
        }
    }

    async fn place(&self, req: Request<Incoming>) -> Reply {
        let trace = TraceHeaders::from_headers(req.headers());
        let body: PlaceOrder = read_json(req).await?;
        check_text("customer", &body.customer, 100)?;
        check_items(&body.items)?;

        let mut order = Order {
            id: new_id("ord"),
            customer: body.customer,
            items: body.items,
            total_cents: 0,
            status: "pending".into(),
            reason: None,
            created_at: String::new(),
        };
        let pending = order.clone();
        order.created_at = self
            .store
            .call(move |conn| insert_order(conn, &pending))
            .await?;

        let outcome = self.saga(&order, &trace).await;
        match &outcome {
            Ok(total) => {
                order.total_cents = *total;
                order.status = "confirmed".into();
            }
            Err(failure) => {
                order.status = "failed".into();
                order.reason = Some(failure.reason().into());
            }
        }
        let finished = order.clone();
        self.store
            .call(move |conn| update_order(conn, &finished))
            .await?;

        match outcome {
            Ok(_) => {
                tracing::info!(order = %order.id, total_cents = order.total_cents, "order confirmed");
                self.notify(&order, &trace);
                reply(StatusCode::CREATED, &order)
            }
            Err(failure) => {
                tracing::info!(order = %order.id, reason = failure.reason(), ?failure, "order failed");
                Ok(json_response(failure.status(), &failure.body(&order)))
            }
        }
    }

    /// Prices, reserves and charges; on `Err` nothing stays reserved (or a release is queued).
    async fn saga(&self, order: &Order, trace: &TraceHeaders) -> Result<i64, Failure> {
        let total = self.price(&order.items, trace).await?;

        let reservation = ReserveRequest {
            order_id: &order.id,
            items: &order.items,
        };
        match self
            .upstream
            .post_json("inventory", "/reservations", &reservation, trace)
            .await
        {
            Ok(answer) if answer.status.is_success() => {}
            Ok(answer) if answer.status == StatusCode::CONFLICT => {
                let sku = answer
                    .json::<Value>()
                    .ok()
                    .and_then(|v| v.get("sku").and_then(Value::as_str).map(str::to_owned));
                return Err(Failure::OutOfStock { sku });
            }
            // The reservation may have been made even though the answer was lost.
            Ok(answer) => {
                self.release(&order.id, trace).await;
                return Err(Failure::Inventory(UpstreamError::Status {
                    service: "inventory",
                    status: answer.status,
                }));
            }
            Err(err) => {
                self.release(&order.id, trace).await;
                return Err(Failure::Inventory(err));
            }
        }

        let charge = ChargeRequest {
            order_id: &order.id,
            amount_cents: total,
        };
        if let Err(err) = self
            .upstream
            .post_json("payments", "/charges", &charge, trace)
            .await
            .and_then(Answer::success)
        {
            self.release(&order.id, trace).await;
            self.refund(&order.id, trace).await;
            return Err(Failure::Payment(err));
        }
        Ok(total)
    }

    /// Refunds the order's charge in case it was captured and only the answer was lost (a
    /// timeout or a 5xx after the charge). Best effort: 404 means there was no charge.
    async fn refund(&self, order_id: &str, trace: &TraceHeaders) {
        let request = serde_json::json!({ "order_id": order_id });
        match self
            .upstream
            .post_json("payments", "/refunds", &request, trace)
            .await
        {
            Ok(answer) if answer.status.is_success() => {
                tracing::info!(order = order_id, "refunded a charge whose answer was lost");
            }
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => {}
            Ok(answer) => {
                tracing::warn!(order = order_id, status = %answer.status, "refund failed");
            }
            Err(err) => tracing::warn!(order = order_id, error = %err, "refund failed"),
        }
    }

    /// The order's total from inventory's current prices.
    async fn price(&self, items: &[Item], trace: &TraceHeaders) -> Result<i64, Failure> {
        #[derive(Deserialize)]
        struct Price {
            price_cents: i64,
        }
        let mut prices: HashMap<&str, i64> = HashMap::new();
        let mut total: i64 = 0;
        for (index, item) in items.iter().enumerate() {
            let price = match prices.get(item.sku.as_str()) {
                Some(price) => *price,
                None => {
                    let answer = self
                        .upstream
                        .get("inventory", &format!("/products/{}", item.sku), trace)
                        .await
                        .map_err(Failure::Inventory)?;
                    if answer.status == StatusCode::NOT_FOUND {
                        return Err(Failure::UnknownProduct {
                            index,
                            sku: item.sku.clone(),
                        });
                    }
                    let price = answer
                        .success()
                        .and_then(|a| a.json::<Price>())
                        .map_err(Failure::Inventory)?
                        .price_cents;
                    prices.insert(&item.sku, price);
                    price
                }
            };
            total = price
                .checked_mul(item.qty)
                .and_then(|line| total.checked_add(line))
                .ok_or(Failure::TooExpensive)?;
        }
        Ok(total)
    }

    /// Releases the order's reservation, retrying a little; if inventory still cannot be
    /// reached, the release is stored for the background retry.
    async fn release(&self, order_id: &str, trace: &TraceHeaders) {
        let path = format!("/reservations/{order_id}");
        let mut last_error = String::new();
        for attempt in 0..RELEASE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RELEASE_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            match self
                .upstream
                .delete("inventory", &path, trace)
                .await
                .and_then(Answer::success)
            {
                Ok(_) => return,
                Err(err) => last_error = err.to_string(),
            }
        }
        tracing::warn!(order = order_id, error = %last_error, "release failed; retrying in the background");
        let order_id = order_id.to_owned();
        if let Err(err) = self
            .store
            .call(move |conn| remember_release(conn, &order_id, &last_error))
            .await
        {
            tracing::error!(error = %err, "cannot remember a release to retry");
        }
    }

    /// Tells notifications about the order, without waiting: a lost notification only logs.
    fn notify(&self, order: &Order, trace: &TraceHeaders) {
        let upstream = self.upstream.clone();
        let trace = trace.clone();
        let order_id = order.id.clone();
        let body = NotifyRequest {
            message: format!(
                "Order {} for {} confirmed: {} item(s), total {}.{:02}",
                order.id,
                order.customer,
                order.items.iter().map(|i| i.qty).sum::<i64>(),
                order.total_cents / 100,
                order.total_cents % 100
            ),
            order_id: order.id.clone(),
        };
        tokio::spawn(async move {
            if let Err(err) = upstream
                .post_json("notifications", "/notifications", &body, &trace)
                .await
                .and_then(Answer::success)
            {
                tracing::warn!(order = %order_id, error = %err, "notification failed");
            }
        });
    }
}

/// Retries remembered releases until the service stops.
async fn retry_releases(store: Store, upstream: Upstream, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pending = match store.call(pending_releases).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read pending releases");
                continue;
            }
        };
        for order_id in pending {
            let path = format!("/reservations/{order_id}");
            let result = upstream
                .delete("inventory", &path, &TraceHeaders::default())
                .await
                .and_then(Answer::success);
            let id = order_id.clone();
            let stored = match result {
                Ok(_) => {
                    tracing::info!(order = %order_id, "reservation released on retry");
                    store.call(move |conn| forget_release(conn, &id)).await
                }
                Err(err) => {
                    let error = err.to_string();
                    store
                        .call(move |conn| remember_release(conn, &id, &error))
                        .await
                }
            };
            if let Err(err) = stored {
                tracing::warn!(order = %order_id, error = %err, "cannot update a pending release");
            }
        }
    }
}

fn insert_order(conn: &mut Connection, order: &Order) -> Result<String, StoreError> {
    let items = items_json(&order.items)?;
    Ok(conn.query_row(
        &format!(
            "INSERT INTO orders (id, customer, items, total_cents, status, reason, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}) RETURNING created_at"
        ),
        params![
            order.id,
            order.customer,
            items,
            order.total_cents,
            order.status,
            order.reason
        ],
        |r| r.get(0),
    )?)
}

fn update_order(conn: &mut Connection, order: &Order) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE orders SET total_cents = ?2, status = ?3, reason = ?4 WHERE id = ?1",
        params![order.id, order.total_cents, order.status, order.reason],
    )?;
    Ok(())
}

fn get_order(conn: &mut Connection, id: &str) -> Result<Option<Order>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, customer, items, total_cents, status, reason, created_at
             FROM orders WHERE id = ?1",
            [id],
            order_row,
        )
        .optional()?;
    row.map(order_from_row).transpose()
}

fn list_orders(conn: &mut Connection) -> Result<Vec<Order>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, customer, items, total_cents, status, reason, created_at
         FROM orders ORDER BY seq DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([LIST_LIMIT], order_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(order_from_row).collect()
}

/// An order row with its items still as stored JSON text.
type OrderRow = (String, String, String, i64, String, Option<String>, String);

fn order_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn order_from_row(row: OrderRow) -> Result<Order, StoreError> {
    let (id, customer, items, total_cents, status, reason, created_at) = row;
    let items = serde_json::from_str(&items)
        .map_err(|err| StoreError::Corrupt(format!("items of order {id}: {err}")))?;
    Ok(Order {
        id,
        customer,
        items,
        total_cents,
        status,
        reason,
        created_at,
    })
}

fn items_json(items: &[Item]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn remember_release(conn: &mut Connection, order_id: &str, error: &str) -> Result<(), StoreError> {
    let tx = write_tx(conn)?;
    tx.execute(
        &format!(
            "INSERT INTO pending_releases (order_id, attempts, last_error, updated_at)
             VALUES (?1, 1, ?2, {NOW})
             ON CONFLICT (order_id) DO UPDATE SET
                 attempts = attempts + 1, last_error = excluded.last_error,
                 updated_at = excluded.updated_at"
        ),
        params![order_id, error],
    )?;
    tx.commit()?;
    Ok(())
}

fn forget_release(conn: &mut Connection, order_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM pending_releases WHERE order_id = ?1",
        [order_id],
    )?;
    Ok(())
}

fn pending_releases(conn: &mut Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT order_id FROM pending_releases ORDER BY updated_at LIMIT ?1")?;
    let rows = stmt.query_map([RELEASE_BATCH], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
