"""External deliveries (email, SMS, Web Push): one log row and one RQ job per delivery.

plan.py decides which channels and when; dispatch.py sends one row through its channel
(channels/, one module each); sweep.py releases held rows and re-queues retries; digests.py
sends the daily and weekly emails that digest_email.py renders, statements.py the monthly
statement that statement_email.py renders from ledger.py's SQL counts; audit.py keeps critical
notifications and reads any stored one back; stats.py, views.py, api.py show what went out.
"""
