-- daily_order_metrics (gold): the reference's vw_daily_order_metrics, one row per UTC day over
-- every order created that day. The projection engine materializes it as a Delta table.
CREATE OR ALTER VIEW dbo.daily_order_metrics
AS
SELECT
    order_date,
    order_count,
    total_revenue,
    avg_order_value,
    unique_customers
FROM OPENROWSET(
    BULK 'daily_order_metrics/',
    DATA_SOURCE = 'cqrs_delta',
    FORMAT = 'DELTA'
)
WITH (
    order_date DATE,
    order_count BIGINT,
    total_revenue DECIMAL(18, 2),
    avg_order_value DECIMAL(18, 2),
    unique_customers BIGINT
) AS r;
GO
