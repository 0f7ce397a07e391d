
ñorder-2026-0042Order"OrderComponent*Z
INSTANCE_CREATEDF{"triggerEvent":"manual create","initialContext":{"orderId":"ORD-42"}}:Created@ò»Í∂∑3p