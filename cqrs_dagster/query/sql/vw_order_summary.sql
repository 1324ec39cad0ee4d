-- vw_order_summary: the reference architecture's own name for order_summary, so reports written
-- against the reference keep working. Mirrors sql/synapse/30_reference_views.sql.
CREATE OR REPLACE VIEW vw_order_summary AS
SELECT
    order_id,
    customer_id,
    customer_name,
    status,
    total_amount,
    item_count,
    created_date,
    updated_date
FROM order_summary;
