DROP TABLE fleet_reviews;
