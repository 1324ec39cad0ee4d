-- vw_daily_order_metrics: the reference architecture's own name for daily_order_metrics, so
-- reports written against the reference keep working. Mirrors sql/synapse/30_reference_views.sql.
CREATE OR REPLACE VIEW vw_daily_order_metrics AS
SELECT
    order_date,
    order_count,
    total_revenue,
    avg_order_value,
    unique_customers
FROM daily_order_metrics;
