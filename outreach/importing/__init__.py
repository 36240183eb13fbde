"""The parts of ``contacts import`` (``outreach.imports`` runs them):

- ``sources``: a file checked whole before anything is imported (``inspect_file``);
- ``blocks``: the file cut into blocks of whole records, parsed as CSV (``read_blocks``,
  ``rows``), with the largest cell it takes (``FIELD_LIMIT``);
- ``quotes``: where records end, quote by quote as the csv module reads them
  (``QuoteScanner``), and the quotes taken as characters;
- ``checking``: blocks parsed and validated in worker processes (``validate_block``);
- ``repeats``: addresses met again within one import run (``Repeats``).
"""
