-- order_summary (gold): the reference's vw_order_summary, one row per order with its customer's
-- name. The projection engine materializes it as a Delta table with the same name.
CREATE OR ALTER VIEW dbo.order_summary
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
FROM OPENROWSET(
    BULK 'order_summary/',
    DATA_SOURCE = 'cqrs_delta',
    FORMAT = 'DELTA'
)
WITH (
    order_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    customer_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    customer_name VARCHAR(400) COLLATE Latin1_General_100_BIN2_UTF8,
    status VARCHAR(32) COLLATE Latin1_General_100_BIN2_UTF8,
    total_amount DECIMAL(18, 2),
    item_count BIGINT,
    created_date DATETIME2(6),
    updated_date DATETIME2(6)
) AS r;
GO
