"""What a network is: the spec (the one hand-written description), its expansion into layer records,
and the torch <-> Keras name and layout mapping derived from those records. No framework imports."""
