"""Diagnosis: from the numbers a run produced to what the mistake is and on which line.

``intermediates`` finds the tensors the student's function held and checks each step of the
backward pass against the student's own upstream values; ``catalogue`` lists known mistakes as
alternative computations; ``diagnose`` puts them together into the report's diagnoses.
"""
