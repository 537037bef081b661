"""What the benchmarks (bench/), the reliability suite (reliability/) and the tests share to run
the project on this machine: throwaway PostgreSQL databases, the settings they run under, the
description of the machine a run measured, and Stripe stand-ins (a fault-injecting proxy in front
of localstripe, webhook signing).

Project tooling, not part of the billing wheel; the site never imports it.
"""
