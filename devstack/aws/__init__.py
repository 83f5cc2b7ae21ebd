"""The AWS emulations: moto's server with devstack's patches (IAM enforced, EMR steps run for real,
Lambda runs images, function URLs), the image registry behind ECR, and the account's infrastructure."""
