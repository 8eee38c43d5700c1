"""Results service: the WBC differential, expert review, signing and the FHIR report.

``queries`` reads, ``reviews`` writes (each call its own transaction), ``fhir``
builds the DiagnosticReport, ``api`` serves them with the review page in ``web/``.
"""
