-- orders (silver): one row per order at its newest applied version.
-- Mirrors sql/synapse/11_orders.sql.
CREATE OR REPLACE VIEW orders AS
SELECT
    order_id,
    customer_id,
    status,
    total_amount,
    item_count,
    items,
    created_date,
    updated_date,
    version,
    last_event_id,
    created_day
FROM _delta_orders;
