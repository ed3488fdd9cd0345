"""What comes back after sending: Twilio status callbacks (`receipts serve`), polling
(`receipts poll`); each turned into store.receipts.Receipt and recorded before it is
acknowledged. Signatures are checked here, at the edge."""
