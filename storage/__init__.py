"""DynamoDB storage of connections and subscriptions, behind small store APIs."""
