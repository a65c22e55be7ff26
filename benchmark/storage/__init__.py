"""Where results live: the content-addressed artifact store (`store`:
safetensors + JSON, keys known before a job runs), the code fingerprints
that are part of every key (`fingerprint`), and resumable checkpoints of a
running job's fits (`checkpoints`)."""
