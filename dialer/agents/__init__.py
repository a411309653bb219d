"""Agents: the people at the phones. Accounts and PINs (``accounts``), sessions as people drive them (``sessions``),
the team presence the daemon paces for (``presence``) and scheduled callbacks as the claim and people read them
(``callbacks``). Every state change goes through ``dialer.outcomes`` (``agent_states``, ``dispositions``,
``callbacks``)."""
