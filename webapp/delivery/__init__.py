"""External deliveries (email, SMS, Web Push): one log row and one RQ job per delivery."""
