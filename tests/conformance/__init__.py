"""One contract, every transport: the tests every source and every destination passes
(``transports.py`` lists them; a new transport joins by adding itself there)."""
