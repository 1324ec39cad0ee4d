-- The reference architecture's own view names, so reports written against it keep working:
-- dbo.vw_order_summary and dbo.vw_daily_order_metrics read the views of the same gold tables.
CREATE OR ALTER VIEW dbo.vw_order_summary
AS
SELECT
    order_id,
    customer_id,
    customer_name,
    status,
    total_amount,
    item_count,
    created_date,
    updated_date
FROM dbo.order_summary;
GO
CREATE OR ALTER VIEW dbo.vw_daily_order_metrics
AS
SELECT
    order_date,
    order_count,
    total_revenue,
    avg_order_value,
    unique_customers
FROM dbo.daily_order_metrics;
GO
