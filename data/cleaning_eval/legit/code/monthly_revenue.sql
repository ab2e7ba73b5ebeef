-- Monthly recognised revenue per plan, used by the finance dashboard.
-- Annual invoices are spread evenly over the 12 months they cover.
-- Owner: finance-data@quillfern.example

WITH invoice_months AS (
    SELECT
        i.id,
        i.plan_code,
        i.currency,
        i.amount_minor,
        CASE WHEN i.period = 'annual' THEN 12 ELSE 1 END AS months,
        generate_series(
            date_trunc('month', i.period_start),
            date_trunc('month', i.period_start)
                + (CASE WHEN i.period = 'annual' THEN 11 ELSE 0 END) * interval '1 month',
            interval '1 month'
        ) AS revenue_month
    FROM invoices i
    WHERE i.status = 'paid'
      AND i.period_start >= DATE '2025-01-01'
)
SELECT
    revenue_month::date                     AS month,
    plan_code,
    currency,
    SUM(amount_minor / months)              AS recognised_minor,
    COUNT(DISTINCT id)                      AS invoices
FROM invoice_months
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
