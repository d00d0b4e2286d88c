//! inventory: the product catalogue and stock. Reservations take stock all-or-nothing in
//! one transaction and are keyed by order id, so a retried reservation never takes twice.

use std::collections::BTreeMap;
use std::path::Path;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::{ApiError, Reply, read_json, reply, segments};
use super::input::{Item, check_id, check_items};
use super::store::{NOW, Store, StoreError, new_id, write_tx};

const MIGRATIONS: &[&str] = &[r"
CREATE TABLE products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    released_at TEXT
);
CREATE TABLE reservation_items (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    sku TEXT NOT NULL REFERENCES products (sku),
    qty INTEGER NOT NULL,
    PRIMARY KEY (order_id, sku)
);
INSERT INTO products (sku, name, price_cents, available) VALUES
    ('espresso-beans', 'Espresso beans, 1 kg', 2400, 100000),
    ('filter-papers', 'Filter papers, pack of 100', 450, 100000),
    ('ceramic-mug', 'Ceramic mug', 1200, 100000),
    ('pour-over-kettle', 'Pour-over kettle', 5900, 100000),
    ('hand-grinder', 'Hand grinder', 8900, 100000),
    ('signed-cookbook', 'Signed cookbook (limited edition)', 3500, 5);
"];

#[derive(Debug, Serialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
}

#[derive(Debug, Deserialize)]
struct ReserveRequest {
    order_id: String,
    items: Vec<Item>,
}

#[derive(Debug, Serialize)]
struct Reservation {
    reservation_id: String,
    order_id: String,
    status: String,
    items: Vec<Item>,
    created_at: String,
}

/// What a reservation attempt came to; anything but `Reserved` rolls the transaction back.
enum Reserve {
    Reserved(Reservation),
    UnknownSku(String),
    Insufficient(String),
}

pub struct Inventory {
    store: Store,
}

impl Inventory {
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let store = Store::open(data_dir, "inventory", MIGRATIONS).await?;
        Ok(Self { store })
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, segments(&path).as_slice()) {
            (Method::GET, ["products"]) => {
                let products = self.store.call(list_products).await?;
                reply(StatusCode::OK, &products)
            }
            (Method::GET, ["products", sku]) => {
                let sku = (*sku).to_owned();
                let found = self
                    .store
                    .call({
                        let sku = sku.clone();
                        move |conn| get_product(conn, &sku)
                    })
                    .await?;
                match found {
                    Some(product) => reply(StatusCode::OK, &product),
                    None => Err(ApiError::NotFound {
                        what: "product",
                        id: sku,
                    }),
                }
            }
            (Method::POST, ["reservations"]) => self.reserve(req).await,
            (Method::GET, ["reservations", order_id]) => {
                let order_id = (*order_id).to_owned();
                let found = self
                    .store
                    .call({
                        let order_id = order_id.clone();
                        move |conn| get_reservation(conn, &order_id)
                    })
                    .await?;
                match found {
                    Some(reservation) => reply(StatusCode::OK, &reservation),
                    None => Err(ApiError::NotFound {
                        what: "reservation",
                        id: order_id,
                    }),
                }
            }
            (Method::DELETE, ["reservations", order_id]) => {
                let order_id = (*order_id).to_owned();
                let released = self
                    .store
                    .call(move |conn| release(conn, &order_id))
                    .await?;
                reply(StatusCode::OK, &json!({"released": released}))
            }
            (_, ["products" | "reservations"] | ["products" | "reservations", _]) => {
                Err(ApiError::MethodNotAllowed)
            }
            _ => Err(ApiError::NoRoute),
        }
    }

    async fn reserve(&self, req: Request<Incoming>) -> Reply {
        let body: ReserveRequest = read_json(req).await?;
        check_id("order_id", &body.order_id)?;
        check_items(&body.items)?;
        let items = body.items.clone();
        let outcome = self
            .store
            .call(move |conn| reserve(conn, &body.order_id, &body.items))
            .await?;
        match outcome {
            Reserve::Reserved(reservation) => reply(
                StatusCode::CREATED,
                &json!({
                    "reservation_id": reservation.reservation_id,
                    "order_id": reservation.order_id,
                    "status": reservation.status,
                }),
            ),
            Reserve::Insufficient(sku) => Err(ApiError::InsufficientStock { sku }),
            Reserve::UnknownSku(sku) => {
                let index = items.iter().position(|i| i.sku == sku).unwrap_or(0);
                Err(ApiError::bad(
                    format!("items[{index}].sku"),
                    format!("unknown product {sku:?}"),
                ))
            }
        }
    }
}

fn list_products(conn: &mut Connection) -> Result<Vec<Product>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT sku, name, price_cents, available FROM products ORDER BY sku")?;
    let rows = stmt.query_map([], product_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn get_product(conn: &mut Connection, sku: &str) -> Result<Option<Product>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT sku, name, price_cents, available FROM products WHERE sku = ?1",
            [sku],
            product_from_row,
        )
        .optional()?)
}

fn product_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        sku: row.get(0)?,
        name: row.get(1)?,
        price_cents: row.get(2)?,
        available: row.get(3)?,
    })
}

/// Takes the stock for every item or for none; a reservation that exists is returned as is.
fn reserve(conn: &mut Connection, order_id: &str, items: &[Item]) -> Result<Reserve, StoreError> {
    let tx = write_tx(conn)?;
    if let Some(existing) = get_reservation(&tx, order_id)? {
        return Ok(Reserve::Reserved(existing));
    }
    // The same sku twice in one order is one larger request.
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for item in items {
        *wanted.entry(item.sku.as_str()).or_default() += item.qty;
    }
    for (sku, qty) in &wanted {
        let available: Option<i64> = tx
            .query_row(
                "SELECT available FROM products WHERE sku = ?1",
                [sku],
                |r| r.get(0),
            )
            .optional()?;
        match available {
            None => return Ok(Reserve::UnknownSku((*sku).to_owned())),
            Some(available) if available < *qty => {
                return Ok(Reserve::Insufficient((*sku).to_owned()));
            }
            Some(_) => {}
        }
    }
    let reservation_id = new_id("res");
    tx.execute(
        &format!(
            "INSERT INTO reservations (order_id, reservation_id, status, created_at)
             VALUES (?1, ?2, 'reserved', {NOW})"
        ),
        params![order_id, reservation_id],
    )?;
    for (sku, qty) in &wanted {
        tx.execute(
            "UPDATE products SET available = available - ?1 WHERE sku = ?2",
            params![qty, sku],
        )?;
        tx.execute(
            "INSERT INTO reservation_items (order_id, sku, qty) VALUES (?1, ?2, ?3)",
            params![order_id, sku, qty],
        )?;
    }
    let reservation = get_reservation(&tx, order_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("reservation {order_id} vanished")))?;
    tx.commit()?;
    Ok(Reserve::Reserved(reservation))
}

/// Gives a held reservation's stock back; `false` when there was nothing to release.
fn release(conn: &mut Connection, order_id: &str) -> Result<bool, StoreError> {
    let tx = write_tx(conn)?;
    let held = tx.execute(
        &format!(
            "UPDATE reservations SET status = 'released', released_at = {NOW}
             WHERE order_id = ?1 AND status = 'reserved'"
        ),
        [order_id],
    )?;
    if held == 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE products SET available = available + (
             SELECT qty FROM reservation_items
             WHERE reservation_items.order_id = ?1 AND reservation_items.sku = products.sku)
         WHERE sku IN (SELECT sku FROM reservation_items WHERE order_id = ?1)",
        [order_id],
    )?;
    tx.commit()?;
    Ok(true)
}

fn get_reservation(conn: &Connection, order_id: &str) -> Result<Option<Reservation>, StoreError> {
    let head = conn
        .query_row(
            "SELECT reservation_id, status, created_at FROM reservations WHERE order_id = ?1",
            [order_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((reservation_id, status, created_at)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT sku, qty FROM reservation_items WHERE order_id = ?1 ORDER BY sku",
    )?;
    let items = stmt
        .query_map([order_id], |r| {
            Ok(Item {
                sku: r.get(0)?,
                qty: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(Reservation {
        reservation_id,
        order_id: order_id.to_owned(),
        status,
        items,
        created_at,
    }))
}
