-- An order's items are written once, when it is placed, and never change: they are kept in the
-- order's own row (three arrays, one element per item, in the order given), so that reading a
-- page of orders is one index scan with no join and no aggregate per order. `order_items`
-- stays, as a view with its former columns, for SQL written against it.

ALTER TABLE orders
    ADD COLUMN item_names      TEXT[]   NOT NULL DEFAULT '{}',
    ADD COLUMN item_quantities BIGINT[] NOT NULL DEFAULT '{}',
    ADD COLUMN item_prices     BIGINT[] NOT NULL DEFAULT '{}';

UPDATE orders o
SET item_names = it.names, item_quantities = it.quantities, item_prices = it.prices
FROM (SELECT order_id,
             array_agg(name ORDER BY position) AS names,
             array_agg(quantity ORDER BY position) AS quantities,
             array_agg(unit_price_minor ORDER BY position) AS prices
      FROM order_items GROUP BY order_id) it
WHERE o.id = it.order_id;

DROP TABLE order_items;

ALTER TABLE orders
    ADD CONSTRAINT orders_items_aligned CHECK (
        cardinality(item_names) = cardinality(item_quantities)
        AND cardinality(item_names) = cardinality(item_prices)),
    ADD CONSTRAINT orders_items_present CHECK (
        array_position(item_names, NULL) IS NULL
        AND array_position(item_quantities, NULL) IS NULL
        AND array_position(item_prices, NULL) IS NULL),
    ADD CONSTRAINT orders_items_quantity CHECK (
        1 <= ALL (item_quantities) AND 1000000 >= ALL (item_quantities)),
    ADD CONSTRAINT orders_items_price CHECK (0 < ALL (item_prices));

CREATE VIEW order_items AS
SELECT o.id AS order_id, (i.n - 1)::integer AS position, i.name, i.quantity, i.unit_price_minor
FROM orders o,
     unnest(o.item_names, o.item_quantities, o.item_prices) WITH ORDINALITY AS i (name, quantity, unit_price_minor, n);
