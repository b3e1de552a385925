"""The study path: everything that produces evidence about rankers, not rankings for production.

The simulator, the replay (simulated online A/B), the KuaiRand loader, the upstream MMoE that gives real
logs their ``p_*`` scores, the benchmark and its report. Modules here import the product path
(``harmonrank.data``, ``harmonrank.rankers`` ...); nothing in the product path imports them.
"""
