from django.urls import path

from . import views

app_name = "costs"
urlpatterns = [
    path("costs/", views.index, name="index"),
    path("costs/export.csv", views.export, name="export"),
    path("costs/estimate", views.estimate, name="estimate"),
    path("costs/prices/", views.prices, name="prices"),
    path("costs/prices/new", views.add_price, name="add_price"),
    path("costs/prices/<int:pk>/change", views.change_price, name="change_price"),
    path("costs/prices/<int:pk>/delete", views.delete_price, name="delete_price"),
    path("costs/budgets/", views.budgets, name="budgets"),
    path("costs/budgets/save", views.save_budget, name="save_budget"),
]
