-- order_summary (gold): the reference's vw_order_summary, one row per order with its customer's
-- name, materialized by the projection engine. Mirrors sql/synapse/20_order_summary.sql.
CREATE OR REPLACE VIEW order_summary AS
SELECT
    order_id,
    customer_id,
    customer_name,
    status,
    total_amount,
    item_count,
    created_date,
    updated_date
FROM _delta_order_summary;
