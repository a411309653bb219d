"""The Zadarma simulator: one call model (``model``) with its scenario files (``scenario``), served over HTTP as
the API (``api``) with its ground truth (``truth``) and run for tests, the demo and ``dialer sim serve``
(``harness``), and driven without HTTP by the discrete-event benchmark (``des``)."""
