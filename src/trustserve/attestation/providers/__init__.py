"""Evidence providers: the code that runs *inside* the TEE and asks the hardware (or the
simulated platform) for evidence over 64 bytes of report data. Chosen by name through
``attestation.registry.make_provider``; nothing here verifies anything."""
