
º
$019b6f4e-2a00-7000-8000-000000000000order-2026-0042Order"OrderComponent*Z
INSTANCE_CREATEDF{"triggerEvent":"manual create","initialContext":{"orderId":"ORD-42"}}:Created@ò»Í∂∑3p