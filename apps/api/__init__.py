"""The read API: stock availability for other systems (``shelflife api``)."""
