"""What every HTTP endpoint shares: errors mapped to statuses in one place,
who may call (route secrets, signatures, bearer tokens, throttling),
paging, and the uvicorn protocol hardened against slow clients."""
