
Ý
$019b6f4e-2c3a-7d10-8a2b-3c4d5e6f7081order-2026-0042Order"OrderComponent*‰
PAYMENT_CONFIRMEDD{"paymentId":"PAY-9","amount":120.5,"lines":[{"sku":"A-1","qty":2}]}€Ðê¶·3"'{"_sourceComponent":"PaymentComponent"}2	Validated:Paid@ŒÐê¶·3J$019b6f4e-2b00-7000-8000-000000000001ZPaymentComponentj/{"orderId":"ORD-42","amount":120.5,"paid":true}p