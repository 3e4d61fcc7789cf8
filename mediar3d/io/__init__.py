"""Input and output: CTC folders (`ctc`), OME-Zarr (`omezarr`), chunked zarr intermediates (`store`),
atomic writes (`atomic`)."""
