//! What the services accept from their callers: line items, ids and text, and the checks
//! every handler runs on them before touching its store.

use serde::{Deserialize, Serialize};

use super::http::ApiError;

/// One line item of a reservation or an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: i64,
}

/// Ids that travel in paths and keys: 1 to 100 of `A-Z a-z 0-9 . _ -`.
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = (1..=100).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            field,
            format!("{field} must be 1 to 100 characters of A-Z, a-z, 0-9, '.', '_' or '-'"),
        ))
    }
}

/// Non-blank text of at most `max` characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ApiError::bad(
            field,
            format!("{field} must be non-blank and at most {max} characters"),
        ));
    }
    Ok(())
}

/// Maximum line items per order and quantity per line.
pub const MAX_ITEMS: usize = 50;
pub const MAX_QTY: i64 = 1000;

/// 1 to [`MAX_ITEMS`] items, each with a valid sku and a quantity of 1 to [`MAX_QTY`].
pub fn check_items(items: &[Item]) -> Result<(), ApiError> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::bad(
            "items",
            format!("items must hold 1 to {MAX_ITEMS} entries"),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        check_id(&format!("items[{i}].sku"), &item.sku)?;
        if !(1..=MAX_QTY).contains(&item.qty) {
            return Err(ApiError::bad(
                format!("items[{i}].qty"),
                format!("qty must be between 1 and {MAX_QTY}"),
            ));
        }
    }
    Ok(())
}
