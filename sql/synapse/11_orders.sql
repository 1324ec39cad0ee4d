-- orders (silver): one row per order at its newest applied version.
CREATE OR ALTER VIEW dbo.orders
AS
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
FROM OPENROWSET(
    BULK 'orders/',
    DATA_SOURCE = 'cqrs_delta',
    FORMAT = 'DELTA'
)
WITH (
    order_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    customer_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    status VARCHAR(32) COLLATE Latin1_General_100_BIN2_UTF8,
    total_amount DECIMAL(18, 2),
    item_count BIGINT,
    items VARCHAR(MAX) COLLATE Latin1_General_100_BIN2_UTF8,
    created_date DATETIME2(6),
    updated_date DATETIME2(6),
    version BIGINT,
    last_event_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    created_day DATE
) AS r;
GO
