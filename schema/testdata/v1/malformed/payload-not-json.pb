

e1i1M*
GO{nope