"""The data: the Flask extensions (SQLAlchemy, Migrate, Socket.IO), the models and the schema."""
