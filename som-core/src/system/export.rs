//! Exporting orders for staff: every order matching the list filters, newest first, read from
//! the database a batch at a time by cursor (the whole result is never in memory), written as
//! CSV or NDJSON by the rules here, so that the API and the CLI write the same files.

use std::fmt::Write as _;

use serde::Serialize;

use super::*;
use crate::domain::{Order, OrderId, OrderStatus, UserId};
use crate::storage::OrderQuery;

/// Orders read from the database at a time.
pub const EXPORT_BATCH: u32 = 500;

/// The file formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One line per order: `id,user,status,fulfillment_status,currency,total_amount,
    /// refunded_amount,created_at,updated_at,item_count,items`, `items` flattened as
    /// `2 x Widget @ 100.00; 1 x Gadget @ 50.00` (RFC 4180 quoting).
    Csv,
    /// One order per line, as the API shows it (with its items).
    Ndjson,
}

impl ExportFormat {
    /// Every format.
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Csv, ExportFormat::Ndjson];

    /// `csv` or `ndjson`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }

    /// Parses `csv` or `ndjson`.
    pub fn parse(raw: &str) -> Option<ExportFormat> {
        Self::ALL.into_iter().find(|f| f.as_str() == raw)
    }

    /// The media type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Ndjson => "application/x-ndjson",
        }
    }

    /// What the file starts with: the CSV header line; nothing for NDJSON.
    pub fn header(self) -> &'static str {
        match self {
            ExportFormat::Csv => {
                "id,user,status,fulfillment_status,currency,total_amount,refunded_amount,created_at,updated_at,item_count,items\r\n"
            }
            ExportFormat::Ndjson => "",
        }
    }

    /// Appends `order`'s line to `out`.
    pub fn write(self, order: &Order, out: &mut String) {
        match self {
            ExportFormat::Csv => csv_line(order, out),
            ExportFormat::Ndjson => {
                // A struct of strings, numbers and times always serialises.
                if let Ok(line) = serde_json::to_string(&ExportedOrder::of(order)) {
                    out.push_str(&line);
                }
                out.push('\n');
            }
        }
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order as one NDJSON line: the API's order representation.
#[derive(Debug, Serialize)]
struct ExportedOrder<'a> {
    id: i64,
    user: i64,
    items: Vec<ExportedItem<'a>>,
    total_amount: String,
    currency: &'static str,
    refunded_amount: String,
    status: &'static str,
    fulfillment_status: &'static str,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize)]
struct ExportedItem<'a> {
    id: i64,
    name: &'a str,
    quantity: i64,
    price: String,
}

impl<'a> ExportedOrder<'a> {
    fn of(o: &'a Order) -> Self {
        ExportedOrder {
            id: o.id.get(),
            user: o.user_id.get(),
            items: o
                .items_with_ids()
                .map(|(id, i)| ExportedItem {
                    id: id.get(),
                    name: &i.name,
                    quantity: i.quantity,
                    price: i.price.amount_string(),
                })
                .collect(),
            total_amount: o.total.amount_string(),
            currency: o.currency().code(),
            refunded_amount: o.refunded.amount_string(),
            status: o.status.as_str(),
            fulfillment_status: o.fulfillment.as_str(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

fn csv_line(o: &Order, out: &mut String) {
    let mut items = String::new();
    for (n, item) in o.items.iter().enumerate() {
        if n > 0 {
            items.push_str("; ");
        }
        let _ = write!(items, "{} x {} @ {}", item.quantity, item.name, item.price.amount_string());
    }
    let _ = write!(
        out,
        "{},{},{},{},{},{},{},{},{},{},",
        o.id,
        o.user_id,
        o.status.as_str(),
        o.fulfillment.as_str(),
        o.currency().code(),
        o.total.amount_string(),
        o.refunded.amount_string(),
        o.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        o.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        o.items.len(),
    );
    csv_field(&items, out);
    out.push_str("\r\n");
}

/// Writes `value` as one CSV field: quoted (quotes doubled) when it holds a comma, a quote or a
/// line break.
fn csv_field(value: &str, out: &mut String) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Which orders to export (staff only): every user's unless `user` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderExportQuery {
    /// Only this user's orders.
    pub user: Option<UserId>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders placed at or after this time.
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders placed before this time.
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// An export under way: [`OrderExport::next_batch`] gives the next orders, newest first,
/// until there are none.
#[derive(Debug)]
pub struct OrderExport {
    system: OrderSystem,
    query: OrderExportQuery,
    before: Option<OrderId>,
    done: bool,
}

impl OrderExport {
    /// The next batch (at most [`EXPORT_BATCH`] orders); `None` once every order was given.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Order>>> {
        if self.done {
            return Ok(None);
        }
        let q = &self.query;
        let batch = self
            .system
            .inner
            .storage
            .list_orders(OrderQuery {
                user_id: q.user,
                status: q.status,
                before: self.before,
                created_after: q.created_after,
                created_before: q.created_before,
                search: None,
                limit: EXPORT_BATCH,
            })
            .await?;
        self.done = batch.len() < EXPORT_BATCH as usize;
        self.before = batch.last().map(|o| o.id);
        if batch.is_empty() { Ok(None) } else { Ok(Some(batch)) }
    }
}

impl OrderSystem {
    /// Starts exporting every order matching `query` (staff only). Nothing is read until the
    /// first [`OrderExport::next_batch`]; orders placed meanwhile may or may not be included.
    pub async fn export_orders(&self, caller: Caller, query: OrderExportQuery) -> Result<OrderExport> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may export orders".into()));
        }
        Ok(OrderExport { system: self.clone(), query, before: None, done: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        let mut out = String::new();
        csv_field("2 x Widget @ 1.00", &mut out);
        out.push('|');
        csv_field("1 x \"Big\", red @ 2.00", &mut out);
        out.push('|');
        csv_field("line\nbreak", &mut out);
        assert_eq!(out, "2 x Widget @ 1.00|\"1 x \"\"Big\"\", red @ 2.00\"|\"line\nbreak\"");
        assert_eq!(ExportFormat::parse("csv"), Some(ExportFormat::Csv));
        assert_eq!(ExportFormat::parse("CSV"), None);
        assert_eq!(ExportFormat::parse("ndjson"), Some(ExportFormat::Ndjson));
        assert_eq!(ExportFormat::parse("xml"), None);
    }
}
