"""Problems, the synthetic world and rationale records. No JAX is imported here."""
