"""PyWren-IBM-Cloud's wait conditions."""

ALL_COMPLETED = 1
ANY_COMPLETED = 2
ALWAYS = 3
