-- daily_order_metrics (gold): the reference's vw_daily_order_metrics, one row per UTC day over
-- every order created that day, materialized by the projection engine.
-- Mirrors sql/synapse/21_daily_order_metrics.sql.
CREATE OR REPLACE VIEW daily_order_metrics AS
SELECT
    order_date,
    order_count,
    total_revenue,
    avg_order_value,
    unique_customers
FROM _delta_daily_order_metrics;
