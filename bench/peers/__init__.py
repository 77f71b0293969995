"""The services a user would pick instead of ours, each serving the committed MNIST autoencoder; the bench
starts and stops them on loopback ports."""
