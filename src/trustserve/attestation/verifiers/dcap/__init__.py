"""SGX and TDX quotes (Intel DCAP): the verifier and where its collateral comes from."""
