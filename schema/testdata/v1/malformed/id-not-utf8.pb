

fÿo