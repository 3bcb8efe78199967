"""Files in, rows out: decoding pictures, finding and streaming inputs, writing rows atomically."""
