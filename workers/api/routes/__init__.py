"""The API's operations, one router per concern: ``search`` (text, point, file, recommend), ``points``
(points and spaces), ``ops`` (health and metrics)."""
